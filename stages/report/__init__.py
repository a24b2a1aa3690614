"""The report's reading of the results: its inputs, tables, text and plots. A change here
reruns only the ``report`` stage.
"""
