module lgf.test/bench_server

go 1.21
