from agents.stats import *  # noqa: F403  (moved to agents/stats.py; this line keeps old imports working)
