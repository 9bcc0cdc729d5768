module lgf.test/slowupstream

go 1.21
