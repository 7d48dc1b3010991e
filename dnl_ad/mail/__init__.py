"""Mail: rendering templates, building MIME messages, talking SMTP. Knows no clients."""
