"""The report of a converted network: energy estimate, data, figures, HTML/Markdown."""
