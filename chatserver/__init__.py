"""chatserver: a QQ-style instant-messaging server and library."""
