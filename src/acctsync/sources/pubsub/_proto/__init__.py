"""Salesforce's Pub/Sub API definition and the gRPC modules made from it (``make proto``)."""
