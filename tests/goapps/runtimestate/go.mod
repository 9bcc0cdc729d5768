module runtimestate

go 1.21
