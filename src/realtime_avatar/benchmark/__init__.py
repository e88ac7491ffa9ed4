"""`avatar bench`: measured figures (latency, speed, memory) against their targets.

``figures`` holds the types a figure group exchanges, ``offline`` the groups that need no
server, ``runner`` the registry of groups per suite, ``report`` the table and the JSON.
"""
