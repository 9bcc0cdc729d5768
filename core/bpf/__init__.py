"""What lgf's BPF programs share: loading C with constants, BTF offsets, ring polling, uprobe
attach/detach without tracefs (``loader``), and the maps every program declares (``lgf_maps.h``)."""
