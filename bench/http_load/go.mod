module pgflow/bench/http_load

go 1.21
