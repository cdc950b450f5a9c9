"""trio_dxlink: a trio-native client for dxFeed's DXLink market-data protocol."""
