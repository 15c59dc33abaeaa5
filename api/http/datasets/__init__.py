"""The service's image data: the listing of what a job can use (``listing``) and the uploads of
ImageFolder archives (``uploads``, reading them through ``archives``); ``layout`` holds the names an
upload may take, ``distill.datasets.folders`` what both take an image folder to be."""
