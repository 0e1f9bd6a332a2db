"""pocketsam's benchmarks: the interleaved timing harness (`harness`), the targets it measures on (`local` in this
process, `android` over adb, `apple` through CoreML compute units), the per-operator profiler (`profile`), and the
reports made from its JSON rows (`schema`, `report`, `plot`). Every row carries parity beside its timings."""
