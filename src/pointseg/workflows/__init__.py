"""What each command does, as functions a script, a benchmark or the app calls with plain arguments: train, map,
predict, evaluate, suggest, points, curate, demo, the sample and the app's projects. ``pointseg.commands`` parses
the command line and calls these; it imports them only when a command runs, so that ``--help`` loads nothing heavy.
"""
