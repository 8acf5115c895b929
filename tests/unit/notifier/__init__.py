import pytest

# the store scenarios assert, and are shared with tests/integration: keep pytest's messages
pytest.register_assert_rewrite("tests.unit.notifier.task_scenarios")
