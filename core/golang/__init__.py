"""Reading Go binaries and Go processes from outside: ELF, build info, struct layouts, prologues,
the pclntab and symbols, process discovery, and a goroutine's memory, as data. Shared by every
source, enricher and command; imports nothing outside core. It decides nothing and emits nothing:
the goroutine sampler and the run-queue reader, which do, are the uprobe source's
(``lgf.sources.uprobe``); ``tests/support/layering.py`` checks it."""
