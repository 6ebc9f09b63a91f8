"""Protocol stubs of SaaS vendors: real HTTP servers on 127.0.0.1 that tests point SDKs at."""
