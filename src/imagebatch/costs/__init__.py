"""Money: AWS and instance prices (data files with a source each), usage metering of counted
operations, estimates before a run, endpoint overhead attribution and state-transition counts
derived from the state machine definition. All amounts are integer micro-dollars."""
