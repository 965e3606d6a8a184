// promcheck reads a Prometheus text exposition on stdin with Prometheus's own parser
// (github.com/prometheus/common/expfmt, what the Prometheus server scrapes with) and prints the
// number of metric families; a parse error goes to stderr with exit status 1. The operations
// test runs it on what pgflow's /metrics serves. Written for the tests.
package main

import (
	"fmt"
	"os"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func main() {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(len(families))
}
