"""Test-only support code: host boot, tiny models, fixture weights. Never imported by the pack."""
