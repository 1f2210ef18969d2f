"""Daily levels (PDH … ORL) and Break & Retest events: the contract is docs/levels.md."""
