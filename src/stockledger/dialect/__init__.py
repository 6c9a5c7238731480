"""The seed's own clients (SPEC §2.7): the requests that clients written for the implementation
this project grew from still send, answered in that implementation's shapes when the operator
turns the dialect on. seed.py: the three answers; middleware.py: which requests are the
dialect's, and the loopback fence."""
