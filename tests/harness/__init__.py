"""Test harnesses that stand in for infrastructure we cannot run here (see kube_emulator)."""
