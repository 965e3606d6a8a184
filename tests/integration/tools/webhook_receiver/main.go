// webhook_receiver is a test server written for pgflow's tests and benchmark: it stands in for
// a user's webhook endpoint, receiving what pgflow's webhook sink sends. Requests are Standard
// Webhooks (standardwebhooks.com) signed POSTs: the receiver gunzips the body if it came with
// Content-Encoding: gzip, checks the webhook-signature against the -secret(s) and the
// webhook-timestamp against -tolerance, counts the events (one per JSON object, the length of a
// JSON array), measures latency (receive time minus each event's data.commit_ts), optionally
// appends one JSON line per request to -log, and answers 200 with an empty body, or, on command,
// with errors, Retry-After or a stall (fault injection for the tests). Standard library only.
//
//	webhook_receiver -listen 127.0.0.1:0 -port-file PATH -secret "whsec_a whsec_b" \
//	                 -log PATH -tolerance 300 -max-body 10MiB
//
//	POST /_control {"status":500,"count":3,"match":"sub","retry_after":2,"stall_ms":0}
//	                                 the next 3 requests whose body contains "sub" get 500 with
//	                                 Retry-After: 2 (count -1 or absent: until changed); replaces
//	                                 the current rule; {} or {"status":200} resets to normal
//	GET  /_control                   the current rule (count = what is left of it)
//	GET  /_stats                     {"requests","events","invalid","statuses","latency_ms"}
//	POST /_stats/reset               zeroes the stats
//
// Control requests are neither logged nor counted. SIGTERM/SIGINT close the log and exit 0.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	keys      [][]byte // HMAC keys decoded from -secret; none: no verification
	tolerance time.Duration
	maxBody   int64
	logMu     sync.Mutex
	logFile   *os.File // nil: no log (benchmark mode)
)

// rule is the fault currently injected; Count is what is left of it (-1: until changed).
type rule struct {
	Status     int    `json:"status"`
	Count      *int   `json:"count,omitempty"`
	Match      string `json:"match"`
	RetryAfter int    `json:"retry_after"`
	StallMs    int    `json:"stall_ms"`
}

var (
	ruleMu  sync.Mutex
	current rule // Count == nil: no rule
)

// take returns how to answer a request with this body, using up one count of a matching rule.
func take(body []byte) (status, retryAfter, stallMs int) {
	ruleMu.Lock()
	defer ruleMu.Unlock()
	r := &current
	if r.Count == nil || *r.Count == 0 || (r.Match != "" && !bytes.Contains(body, []byte(r.Match))) {
		return 200, 0, 0
	}
	if *r.Count > 0 {
		*r.Count--
	}
	return r.Status, r.RetryAfter, r.StallMs
}

// Latencies go to a log-scale histogram of microseconds (buckets 1% wide) so that memory stays
// bounded however long a benchmark runs; percentiles are thus within about 1%, max is exact.
const growth = 1.01

var logGrowth = math.Log(growth)

type stats struct {
	Requests, Events, Invalid int64
	Statuses                  map[int]int64
	hist                      [4096]int64 // 1.01^4096 µs: ample; bucket 0: < 1 µs or negative
	count                     int64
	maxMs                     float64
}

var (
	statsMu sync.Mutex
	st      = stats{Statuses: map[int]int64{}}
)

func (s *stats) addLatency(d time.Duration) {
	us, i := float64(d)/1e3, 0
	if us >= 1 {
		i = 1 + int(math.Log(us)/logGrowth)
		if i >= len(s.hist) {
			i = len(s.hist) - 1
		}
	}
	s.hist[i]++
	if s.count++; s.count == 1 || us/1e3 > s.maxMs {
		s.maxMs = us / 1e3
	}
}

// percentile returns the q-quantile in ms: the geometric middle of its bucket, at most max.
func (s *stats) percentile(q float64) float64 {
	target, seen := int64(math.Ceil(q*float64(s.count))), int64(0)
	for i, n := range s.hist {
		if seen += n; n > 0 && seen >= target {
			if i == 0 {
				return 0
			}
			return math.Min(math.Pow(growth, float64(i)-0.5)/1e3, s.maxMs)
		}
	}
	return 0
}

// eventHead is the little of an event the receiver reads: its data.commit_ts, for latency.
type eventHead struct {
	Data struct {
		CommitTS string
	}
}

// scanEvents reads the events of a body (one JSON object, or an array of them) in one pass over
// its bytes, without decoding it: the number of top-level objects and each one's data.commit_ts
// (a key at the depth of the "data" object's members). A benchmark's receiver should answer at
// once; decoding every event would make it the bottleneck on a small machine.
func scanEvents(body []byte) []eventHead {
	var events []eventHead
	depth, base := 0, -1 // base: the depth of an event object's members
	inString, escaped := false, false
	keyStart, lastString := -1, ""
	for i := 0; i < len(body); i++ {
		c := body[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
				lastString = string(body[keyStart:i])
			}
			continue
		}
		switch c {
		case '"':
			inString, keyStart = true, i+1
		case '[':
			depth++
		case '{':
			depth++
			if base < 0 {
				base = depth
			}
			if depth == base {
				events = append(events, eventHead{})
			}
		case '}', ']':
			depth--
		case ':':
			// A member of "data" named commit_ts whose value is a string.
			if depth == base+1 && lastString == "commit_ts" && len(events) > 0 {
				j := i + 1
				for j < len(body) && (body[j] == ' ' || body[j] == '\n') {
					j++
				}
				if j < len(body) && body[j] == '"' {
					if k := bytes.IndexByte(body[j+1:], '"'); k >= 0 {
						events[len(events)-1].Data.CommitTS = string(body[j+1 : j+1+k])
					}
				}
			}
			lastString = ""
		case ',':
			lastString = ""
		}
	}
	return events
}

// verify checks the Standard Webhooks signature and timestamp; nil when there is no secret.
func verify(h http.Header, body []byte, now time.Time) *bool {
	if len(keys) == 0 {
		return nil
	}
	ok := false
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err == nil && (tolerance <= 0 || now.Sub(time.Unix(sec, 0)).Abs() <= tolerance) {
		for _, key := range keys {
			mac := hmac.New(sha256.New, key)
			mac.Write([]byte(id + "." + ts + "."))
			mac.Write(body)
			want := mac.Sum(nil)
			for _, sig := range strings.Fields(h.Get("webhook-signature")) {
				if v, b64, found := strings.Cut(sig, ","); found && v == "v1" {
					got, err := base64.StdEncoding.DecodeString(b64)
					ok = ok || (err == nil && hmac.Equal(got, want))
				}
			}
		}
	}
	return &ok
}

// receive handles one webhook delivery: everything but the control paths.
func receive(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	gz := strings.EqualFold(strings.TrimSpace(r.Header.Get("Content-Encoding")), "gzip")
	answered, valid := 0, (*bool)(nil) // valid: nil without a secret, else false until verified
	if len(keys) > 0 {
		valid = new(bool)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	badGzip := false
	if err == nil && gz {
		zr, zerr := gzip.NewReader(bytes.NewReader(body))
		if zerr == nil {
			body, zerr = io.ReadAll(io.LimitReader(zr, maxBody+1))
		}
		if zerr == nil && int64(len(body)) > maxBody {
			err = &http.MaxBytesError{Limit: maxBody}
		}
		badGzip = zerr != nil
	}
	switch {
	case errors.As(err, &tooBig):
		answered, body = http.StatusRequestEntityTooLarge, nil
	case badGzip: // not gzip after all, or truncated
		answered, body = http.StatusBadRequest, nil
	case err != nil: // the client went away while sending: answered stays 0
		body = nil
	default:
		valid = verify(r.Header, body, at)
		status, retryAfter, stallMs := take(body)
		if stallMs > 0 {
			select {
			case <-time.After(time.Duration(stallMs) * time.Millisecond):
			case <-r.Context().Done():
			}
		}
		if r.Context().Err() == nil {
			answered = status
			if retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
			}
		}
	}
	if answered != 0 {
		w.WriteHeader(answered)
	}

	// Count the events, and their latency when the answer was a success.
	events := scanEvents(body)
	statsMu.Lock()
	st.Requests++
	st.Events += int64(len(events))
	st.Statuses[answered]++
	if valid != nil && !*valid {
		st.Invalid++
	}
	for _, e := range events {
		if answered/100 != 2 || e.Data.CommitTS == "" {
			continue
		}
		if ts, err := time.Parse(time.RFC3339Nano, e.Data.CommitTS); err == nil {
			st.addLatency(at.Sub(ts))
		}
	}
	statsMu.Unlock()

	if logFile != nil {
		writeLog(r, at, valid, answered, gz, body)
	}
}

// writeLog appends the request as one JSON line, in one write.
func writeLog(r *http.Request, at time.Time, valid *bool, answered int, gz bool, body []byte) {
	headers := map[string]string{"host": r.Host}
	for name, values := range r.Header {
		headers[strings.ToLower(name)] = strings.Join(values, ", ")
	}
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
	enc.SetEscapeHTML(false)
	enc.Encode(map[string]any{ // Encode ends the line with '\n'
		"at_ns": at.UnixNano(), "method": r.Method, "path": r.URL.Path,
		"id": r.Header.Get("webhook-id"), "timestamp": r.Header.Get("webhook-timestamp"),
		"signature": r.Header.Get("webhook-signature"), "valid": valid, "answered": answered,
		"gzip": gz, "headers": headers, "body": string(body),
	})
	logMu.Lock()
	defer logMu.Unlock()
	if logFile != nil {
		if _, err := logFile.Write(line.Bytes()); err != nil {
			log.Printf("log: %v", err)
		}
	}
}

func control(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var next rule
		if err := json.NewDecoder(r.Body).Decode(&next); err != nil && err != io.EOF {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if next.Status == 0 {
			next.Status = 200
		}
		if next.Status == 200 && next.StallMs <= 0 && next.RetryAfter <= 0 {
			next = rule{Status: 200} // normal
		} else if next.Count == nil {
			forever := -1
			next.Count = &forever
		}
		ruleMu.Lock()
		current = next
		ruleMu.Unlock()
	}
	ruleMu.Lock()
	out, _ := json.Marshal(current)
	ruleMu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func statsHandler(w http.ResponseWriter, r *http.Request) {
	statsMu.Lock()
	if r.URL.Path == "/_stats/reset" {
		st = stats{Statuses: map[int]int64{}}
	}
	round := func(ms float64) float64 { return math.Round(ms*1e3) / 1e3 }
	out, _ := json.Marshal(map[string]any{
		"requests": st.Requests, "events": st.Events, "invalid": st.Invalid, "statuses": st.Statuses,
		"latency_ms": map[string]any{"p50": round(st.percentile(0.5)),
			"p99": round(st.percentile(0.99)), "max": round(st.maxMs), "count": st.count},
	})
	statsMu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

// parseSize reads "10MiB", "512KiB", "1GiB", "65536" and the like.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	portFile := flag.String("port-file", "", "write the bound port number to this file")
	secrets := flag.String("secret", "", `space-separated "whsec_..." secrets; empty: no verification`)
	logPath := flag.String("log", "", "append one JSON line per request here; empty: no log")
	tol := flag.Int("tolerance", 300, "max seconds between webhook-timestamp and now (0: no check)")
	maxBodyFlag := flag.String("max-body", "10MiB", "largest body accepted (413 beyond), also after gunzip")
	flag.Parse()

	var err error
	if maxBody, err = parseSize(*maxBodyFlag); err != nil {
		log.Fatal(err)
	}
	tolerance = time.Duration(*tol) * time.Second
	for _, s := range strings.Fields(*secrets) {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil {
			log.Fatalf("secret %q: %v", s, err)
		}
		keys = append(keys, key)
	}
	if *logPath != "" {
		if logFile, err = os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			log.Fatal(err)
		}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" { // write then rename, so that readers never see a partial file
		tmp := filepath.Join(filepath.Dir(*portFile), "."+filepath.Base(*portFile)+".tmp")
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("webhook_receiver listening on %s", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		logMu.Lock()
		if logFile != nil {
			logFile.Close()
			logFile = nil
		}
		os.Exit(0)
	}()

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_control":
			control(w, r)
		case "/_stats", "/_stats/reset":
			statsHandler(w, r)
		default:
			receive(w, r)
		}
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second}
	log.Fatal(srv.Serve(ln))
}
