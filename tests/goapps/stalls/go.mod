module lgf.test/stalls

go 1.21
