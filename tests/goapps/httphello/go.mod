module lgf.test/httphello

go 1.21
