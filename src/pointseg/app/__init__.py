"""``pointseg app``'s package: the project folder (``project``), who may talk to it (``security``) and the web
server (``server``)."""
