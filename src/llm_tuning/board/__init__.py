"""`llm-tuning board`: the whole loop in a browser (data, train, evaluate, chat and mix, SDE reports).

llm-tuning board --workdir . --port 7860
"""
