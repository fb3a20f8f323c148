"""The server's certificate authority: authorities and their rotation, and credential minting."""
