module lgf.test/tracehttp

go 1.21
