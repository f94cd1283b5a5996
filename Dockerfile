# The HydraLA-Net app as a Hugging Face Docker Space (DESIGN §9); any Docker host works too:
#   docker build -t hydralanet . && docker run -p 7860:7860 -e HYDRALANET_MODEL=owner/name hydralanet
# Streamlit 1.67 needs Python >= 3.11.
FROM python:3.11-slim

# Spaces run the container as UID 1000: create that user and keep everything it writes
# (pip's --user installs, the Hugging Face cache) under its home.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HYDRALANET_LOCK_MODEL=1
WORKDIR $HOME/app

# The default Space hardware is CPU only. PyTorch's CPU index serves torch 2.14.1+cpu, which
# satisfies the torch==2.14.1 pin in requirements.txt and leaves out ~3 GB of CUDA libraries.
# For a GPU Space build with --build-arg TORCH_INDEX= to get the default (CUDA) wheels.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY --chown=user requirements.txt .
RUN pip install --user ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -r requirements.txt

COPY --chown=user . .
RUN mkdir -p "$HF_HOME"

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/_stcore/health', timeout=4)"

# XSRF protection is turned off here and only here, not in .streamlit/config.toml: a Space
# shows the app in an iframe on another domain (huggingface.co around *.hf.space), where the
# browser blocks Streamlit's XSRF cookie as a third-party cookie, so every st.file_uploader
# upload would fail with 403. Local runs keep the protection on.
CMD ["streamlit", "run", "app.py", \
     "--server.port=7860", "--server.address=0.0.0.0", "--server.enableXsrfProtection=false"]
