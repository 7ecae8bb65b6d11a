FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY commands commands
COPY projections projections
COPY api api
COPY service service
COPY finance finance
COPY web web
RUN pip install --no-cache-dir .
ENV LEDGER_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
