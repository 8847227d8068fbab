"""Orchestration patterns on top of tasks: branching, trigger rules, sensors, checks, resources,
mapping, partitions, pools and recorded outputs."""
