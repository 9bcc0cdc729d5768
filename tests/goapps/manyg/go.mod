module lgf.test/manyg

go 1.21
