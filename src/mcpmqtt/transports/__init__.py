"""How clients reach the server: stdio, Streamable HTTP and HTTP+SSE, and who may call over HTTP."""
