"""``appliance check``: the hardware self-test (pure plan, asyncio runner)."""
