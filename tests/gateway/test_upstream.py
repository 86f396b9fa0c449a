"""The gateway's HTTP/1.1 client (gateway.upstream) against a scripted server on 127.0.0.1 that
answers each path with exact bytes: framings, keep-alive, a connection closed under a reused
request, early hints, HEAD, slow readers, servers that hang or do not speak HTTP."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from gateway.upstream import HIGH_WATER, ConnectFailed, Disconnected, UpstreamPool, UpstreamTimeout
from tests.gateway.test_pieces import run
from tests.gateway.upstream import free_port

BIG = 20 * 1024 * 1024


class ScriptedServer:
    """Reads a request (head plus Content-Length or chunked body) and answers by path."""

    def __init__(self):
        self.connections = 0
        self.requests: list[tuple[bytes, bytes, bytes]] = []  # (request line, head, body)
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, _, rest = head.partition(b"\r\n")
                headers = rest.lower()
                if b"transfer-encoding: chunked" in headers:
                    body = b""
                    while size := int((await reader.readline()).strip(), 16):
                        body += await reader.readexactly(size)
                        await reader.readline()
                    await reader.readline()
                elif b"content-length:" in headers:
                    length = int(headers.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                else:
                    body = b""
                self.requests.append((line, head, body))
                path = line.split()[1]
                served += 1
                if path == b"/close-on-second" and served == 2:
                    break  # the server's keep-alive timeout won the race: closed, no answer
                if await self.answer(path, body, writer) == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, path: bytes, body: bytes, writer: asyncio.StreamWriter) -> str | None:
        ok = b"HTTP/1.1 200 OK\r\n"
        if path in (b"/plain", b"/close-on-second"):
            writer.write(ok + b"content-length: 5\r\ncontent-type: text/plain\r\n\r\nhello")
        elif path == b"/echo":
            answer = b"%d" % len(body)
            writer.write(ok + b"content-length: %d\r\n\r\n%s" % (len(answer), answer))
        elif path == b"/chunked":
            writer.write(ok + b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        elif path == b"/until-close":
            writer.write(ok + b"content-type: text/plain\r\n\r\nall of it")
            await writer.drain()
            return "close"
        elif path == b"/hints":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
            writer.write(ok + b"content-length: 2\r\nx-final: yes\r\n\r\nok")
        elif path == b"/head":
            writer.write(ok + b"content-length: 1000\r\n\r\n")  # HEAD: the length of a body not sent
        elif path == b"/big":
            writer.write(ok + b"content-length: %d\r\n\r\n" % BIG)
            piece = b"x" * 65536
            for _ in range(BIG // len(piece)):
                writer.write(piece)
                await writer.drain()
        elif path == b"/extra":  # more than Content-Length: the stream is out of step
            writer.write(ok + b"content-length: 2\r\n\r\nhi" + ok + b"content-length: 8\r\n\r\nINJECTED")
        elif path == b"/trailers":
            writer.write(ok + b"transfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-trailer: t\r\n\r\n")
        elif path == b"/reset":  # a close-delimited body cut by a reset, not ended by a close
            writer.write(ok + b"content-type: text/plain\r\n\r\npartial-")
            await writer.drain()
            # SO_LINGER 0: closing sends RST instead of FIN.
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            writer.transport.abort()
            return "close"
        elif path == b"/hang":
            await asyncio.sleep(30)
        elif path == b"/garbage":
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        return None


async def read_all(response) -> bytes:
    async with response:
        return b"".join([chunk async for chunk in response.chunks()])


def scenario(test):
    """Run `test(pool, server, port)` on a fresh loop with a server and a pool."""

    async def main():
        server = ScriptedServer()
        port = await server.start()
        pool = UpstreamPool(connect_timeout=2, read_timeout=0.5)
        try:
            return await test(pool, server, port)
        finally:
            pool.close()
            await server.close()

    return run(main())


def request(pool: UpstreamPool, port: int, path: bytes, method: str = "GET", body=None, length=None):
    return pool.request(
        method=method, host="127.0.0.1", port=port, target=path, headers=[(b"x-test", b"1")],
        body=body, content_length=length,
    )  # fmt: skip


def test_keep_alive_reuses_one_connection():
    async def test(pool, server, port):
        bodies = [await read_all(await request(pool, port, b"/plain")) for _ in range(5)]
        return bodies, server.connections, server.requests[0][1]

    bodies, connections, head = scenario(test)
    assert bodies == [b"hello"] * 5
    assert connections == 1
    assert b"host: 127.0.0.1:" in head and b"x-test: 1" in head


def test_chunked_and_close_delimited_bodies():
    async def test(pool, server, port):
        chunked = await read_all(await request(pool, port, b"/chunked"))
        until_close = await read_all(await request(pool, port, b"/until-close"))
        after = await read_all(await request(pool, port, b"/plain"))
        return chunked, until_close, after, server.connections

    chunked, until_close, after, connections = scenario(test)
    assert (chunked, until_close, after) == (b"hello world", b"all of it", b"hello")
    assert connections == 2  # the close-delimited answer used its connection up


def test_early_hints_and_head():
    async def test(pool, server, port):
        hinted = await request(pool, port, b"/hints")
        hinted_body = await read_all(hinted)
        head = await request(pool, port, b"/head", method="HEAD")
        head_body = await read_all(head)
        return hinted.status, hinted.header(b"x-final"), hinted_body, head.status, head_body

    assert scenario(test) == (200, b"yes", b"ok", 200, b"")


def test_a_pooled_connection_closed_under_a_get_is_retried_once_on_a_new_one():
    async def test(pool, server, port):
        first = await read_all(await request(pool, port, b"/close-on-second"))
        second = await read_all(await request(pool, port, b"/close-on-second"))
        return first, second, server.connections, len(server.requests)

    assert scenario(test) == (b"hello", b"hello", 2, 3)


def test_a_post_is_not_sent_twice():
    """The server may have run a POST before its connection died: it is not repeated."""

    async def test(pool, server, port):
        await read_all(await request(pool, port, b"/close-on-second", method="POST", body=b"{}"))
        with pytest.raises(Disconnected):
            await request(pool, port, b"/close-on-second", method="POST", body=b"{}")
        return len(server.requests)

    assert scenario(test) == 2


def test_bytes_beyond_the_answer_are_not_taken_for_it_nor_for_the_next():
    async def test(pool, server, port):
        extra = await read_all(await request(pool, port, b"/extra"))
        trailers = await request(pool, port, b"/trailers")
        trailers_body = await read_all(trailers)
        after = await read_all(await request(pool, port, b"/plain"))
        return extra, trailers_body, trailers.header(b"x-trailer"), after, server.connections

    extra, trailers_body, trailer, after, connections = scenario(test)
    assert (extra, trailers_body, trailer, after) == (b"hi", b"ok", b"", b"hello")
    assert connections == 2  # the out-of-step connection was closed, not reused


@pytest.mark.parametrize("length", [None, 300_000])
def test_a_streamed_body_is_sent_sized_or_chunked(length):
    async def pieces():
        for _ in range(3):
            yield b"y" * 100_000

    async def test(pool, server, port):
        answer = await read_all(
            await request(pool, port, b"/echo", method="POST", body=pieces(), length=length)
        )
        return answer, server.requests[-1][1].lower()

    answer, head = scenario(test)
    assert answer == b"300000"
    if length is None:
        assert b"transfer-encoding: chunked" in head and b"content-length" not in head
    else:
        assert b"content-length: 300000" in head and b"transfer-encoding" not in head


def test_a_slow_reader_pauses_the_server_instead_of_buffering():
    async def test(pool, server, port):
        response = await request(pool, port, b"/big")
        async with response:
            chunks = response.chunks()
            total = len(await anext(chunks))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not response._connection._reading_paused:  # the server keeps writing meanwhile
                assert loop.time() < deadline, "reading never paused"
                await asyncio.sleep(0.01)
            buffered = response._buffered
            async for chunk in chunks:
                total += len(chunk)
        return buffered, total

    buffered, total = scenario(test)
    assert HIGH_WATER < buffered < HIGH_WATER + 512 * 1024
    assert total == BIG


def test_errors_connecting_waiting_and_reading():
    async def test(pool, server, port):
        errors = []
        for target_port, path in ((free_port(), b"/plain"), (port, b"/hang"), (port, b"/garbage")):
            try:
                await read_all(await request(pool, target_port, path))
            except Exception as exc:
                errors.append(type(exc))
        return errors

    assert scenario(test) == [ConnectFailed, UpstreamTimeout, Disconnected]


def test_a_body_cut_by_a_reset_is_an_error_not_an_end():
    async def test(pool, server, port):
        with pytest.raises(Disconnected):
            await read_all(await request(pool, port, b"/reset"))

    scenario(test)
