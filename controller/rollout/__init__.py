"""The rollout state machine (pure): phases, ``advance(state, policy, verdicts, now)``.

Arrives with issue 3.
"""
