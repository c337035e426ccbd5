"""harmony-agent: an agent runtime for gpt-oss."""
