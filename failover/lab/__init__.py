"""The lab: a real ZooKeeper ensemble and simulated IPCs behind real OpenSSH servers."""
