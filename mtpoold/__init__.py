"""mtpoold: pool many Telegram user accounts through rate-gated proxies, in one Trio daemon."""
