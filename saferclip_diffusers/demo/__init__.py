"""The side-by-side Gradio demo (``python demo/app.py``).

- :mod:`.engine`: load the Safer pipeline and run one comparison (no Gradio);
- :mod:`.limits`: bounds on user inputs; :mod:`.screen`: NudeNet verdicts and the blur;
- :mod:`.interpret`: "Interpreted as", nearest COCO captions in each encoder's space;
- :mod:`.render`: results as galleries and tables; :mod:`.app`: the ``gr.Blocks`` page and its launch.

Gradio is imported only by :mod:`.app`.
"""
