"""The edge node's HTTP side: session API, events WebSocket, metrics, demo page."""
