module lgf.test/pingpong

go 1.21
