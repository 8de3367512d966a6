"""The sandbox: a deterministic merchant and strict emulators of Khaos Control and Ometria.

Production code never imports this package except through the transport the profile
chooses (``khaosync.connect``).
"""
