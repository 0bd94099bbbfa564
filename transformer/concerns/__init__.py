"""One module per concern, each the engine for one policy document in patches/.

plan() runs them in this order, which is the order of the ops in every patch:
tmpfs, cgroups, machine-id, journal, capabilities, environment, annotations, copy-up.
Detection runs first and decides whether any of them runs at all.
"""
