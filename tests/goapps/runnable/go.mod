module lgf.test/runnable

go 1.21
