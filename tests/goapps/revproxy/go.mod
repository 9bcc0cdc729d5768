module lgf.test/revproxy

go 1.21
