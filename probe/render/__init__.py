"""Data -> table / JSON / CSV / Markdown / HTML / JUnit / pictures. Renders; never computes a statistic."""
