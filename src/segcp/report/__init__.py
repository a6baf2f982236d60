"""Reports of results: terminal and Markdown tables, the HTML document, figures, summaries."""
