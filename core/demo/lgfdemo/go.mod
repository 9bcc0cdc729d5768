module lgfdemo

go 1.21
