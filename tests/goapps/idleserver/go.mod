module lgf.test/idleserver

go 1.21
