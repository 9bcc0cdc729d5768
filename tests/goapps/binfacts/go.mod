module lgf.test/binfacts

go 1.21
