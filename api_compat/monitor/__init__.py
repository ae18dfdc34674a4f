"""The StepFlow Monitor API (specs/stepflow-monitor-api.md): its routes (`routes.py`: REST under
/api, the WebSocket at /ws and on its own port), its wire format (`wire.py`, `wire_decode.py`) and
its client (`client.py`, the engine client of `stepflow tui --connect`). Importing the client loads
none of the server's modules."""
