"""Reading Go binaries and Go processes from outside: ELF, build info, struct layouts, prologues,
the pclntab and symbols, process discovery, and a goroutine's memory. Shared by every source,
enricher and command; imports nothing outside core."""
