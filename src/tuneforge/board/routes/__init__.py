"""The board's routes, one module per concern; each reads the shared `BoardState` from `request.app.state.board`."""
